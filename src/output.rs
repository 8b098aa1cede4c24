//! Output files that cannot be lost or clobbered. Every file pgolf writes goes through [`write_file`]:
//! - it is refused when it is one of the command's inputs (the same file by identity, so a hard link or another
//!   spelling of the path is caught too);
//! - it is written to a temporary file with a unique name in the target's own directory, which is read back and
//!   checked before it is renamed into place, so two writers of one output each check their own bytes and the output
//!   is always one whole file;
//! - the temporary file is removed on every error path (it deletes itself when dropped), and temporary files that
//!   a killed pgolf left beside the same output (`kill -9`) are removed by the next write.

use std::io::Write;
use std::path::{Path, PathBuf};

/// What went wrong writing an output file.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{path}: {message}")]
    Refused { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Write { path: PathBuf, message: String },
}

/// Whether two paths name the same existing file (device and inode on Unix; the canonical path elsewhere).
pub fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::metadata(a), std::fs::metadata(b)) {
            (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        match (a.canonicalize(), b.canonicalize()) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        }
    }
}

/// The prefix of every temporary file written for `file_name`; the writer's process id follows it.
fn temp_prefix(file_name: &str) -> String {
    format!(".{file_name}.pgolf-tmp-")
}

/// Removes temporary files for `file_name` in `dir` whose writer is no longer running (Linux: no `/proc/PID`).
fn remove_stale_temporaries(dir: &Path, file_name: &str) {
    if !cfg!(target_os = "linux") {
        return;
    }
    let prefix = temp_prefix(file_name);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(&prefix)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if is_file && pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Refuses an output that is one of the command's inputs (checked before any work, and again when writing).
pub fn refuse_inputs(path: &Path, inputs: &[&Path]) -> Result<(), OutputError> {
    match inputs.iter().find(|i| same_file(path, i)) {
        Some(input) => Err(OutputError::Refused {
            path: path.into(),
            message: format!(
                "is the input {}: refusing to overwrite it; write the output elsewhere",
                input.display()
            ),
        }),
        None => Ok(()),
    }
}

/// Writes `path` through `write` (which fills the temporary file it is given), runs `check` on the temporary file,
/// and renames it into place. `inputs` are the files the command read: the output may be none of them.
pub fn write_with(
    path: &Path,
    inputs: &[&Path],
    write: impl FnOnce(&Path) -> Result<(), String>,
    check: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<(), OutputError> {
    refuse_inputs(path, inputs)?;
    let io = |source| OutputError::Io {
        path: path.into(),
        source,
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| OutputError::Refused {
            path: path.into(),
            message: "names no file".into(),
        })?
        .to_string_lossy()
        .into_owned();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    remove_stale_temporaries(&dir, &file_name);
    let temp = tempfile::Builder::new()
        .prefix(&format!(
            "{}{}-",
            temp_prefix(&file_name),
            std::process::id()
        ))
        .tempfile_in(&dir)
        .map_err(io)?;
    let failed = |message: String| OutputError::Write {
        path: path.into(),
        message,
    };
    write(temp.path()).map_err(failed)?;
    temp.as_file().sync_all().map_err(io)?;
    check(temp.path()).map_err(|m| failed(format!("the written file does not read back: {m}")))?;
    temp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

/// Writes `bytes` to `path` (see [`write_with`]), checking that the file holds exactly them.
pub fn write_file(path: &Path, inputs: &[&Path], bytes: &[u8]) -> Result<(), OutputError> {
    write_with(
        path,
        inputs,
        |temp| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(temp)
                .map_err(|e| e.to_string())?;
            f.write_all(bytes).map_err(|e| e.to_string())
        },
        |temp| match std::fs::read(temp) {
            Ok(back) if back == bytes => Ok(()),
            Ok(back) => Err(format!("{} bytes instead of {}", back.len(), bytes.len())),
            Err(e) => Err(e.to_string()),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pgolf-output-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn an_input_is_never_overwritten_whatever_its_name() {
        let d = dir("input");
        let input = d.join("model.safetensors");
        std::fs::write(&input, b"weights").unwrap();
        let link = d.join("link.safetensors");
        std::fs::hard_link(&input, &link).unwrap();
        let spelled = d.join(".").join("model.safetensors");
        for out in [&input, &link, &spelled] {
            let e = write_file(out, &[&input], b"artifact").unwrap_err();
            assert!(e.to_string().contains("is the input"), "{e}");
        }
        assert_eq!(std::fs::read(&input).unwrap(), b"weights");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_failed_check_leaves_nothing_and_stale_temporaries_are_removed() {
        let d = dir("check");
        let out = d.join("out.bin");
        let stale = d.join(format!("{}4000000000-abc", temp_prefix("out.bin")));
        std::fs::write(&stale, b"left by a killed writer").unwrap();
        let user = d.join("out.tmp");
        std::fs::write(&user, b"the user's file").unwrap();
        let e = write_with(
            &out,
            &[],
            |t| std::fs::write(t, b"half").map_err(|e| e.to_string()),
            |_| Err("wrong".into()),
        )
        .unwrap_err();
        assert!(e.to_string().contains("does not read back"), "{e}");
        let left: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["out.tmp"], "only the user's own file is left");
        assert_eq!(std::fs::read(&user).unwrap(), b"the user's file");
        write_file(&out, &[], b"whole").unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"whole");
        let _ = std::fs::remove_dir_all(&d);
    }
}
