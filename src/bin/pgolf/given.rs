//! Flags with a default reach the library only when the command line gave them (clap's value source tells).

use clap::ArgMatches;
use clap::parser::ValueSource;

/// `value` where the flag `id` was given on the command line, else None (left at its default).
pub fn given<T: Clone>(matches: &ArgMatches, id: &str, value: &T) -> Option<T> {
    (matches.value_source(id) == Some(ValueSource::CommandLine)).then(|| value.clone())
}
