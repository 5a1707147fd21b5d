//! The command-line programs (native only). Each binary in `src/bin` only calls its command's
//! `main` here, so the generic code is compiled once, in the library, for every backend. This
//! module also holds their glue: argument parsing with the original's single-dash long options
//! and one-line errors, and exit codes.

pub mod analyze;
pub mod bench;
pub mod plot;
pub mod sample;
pub mod sweep;
pub mod train;

use std::io::IsTerminal;
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressStyle};

use crate::run::RunError;

/// Progress of long work: on a terminal a bar with the stage, counts and ETA; otherwise (a log
/// file, a pipe) one line on stderr per stage.
pub struct Progress {
    bar: Option<ProgressBar>,
    what: &'static str,
}

impl Progress {
    /// `total` steps of work called `what` (the command's name).
    pub fn new(what: &'static str, total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(&format!(
                    "{what}: {{msg}} {{bar:30}} {{pos}}/{{len}}  [{{elapsed_precise}} < {{eta_precise}}]"
                ))
                .expect("valid template"),
            );
            bar
        });
        Self { bar, what }
    }

    /// A new stage of the work.
    pub fn stage(&self, message: impl Into<String>) {
        let message = message.into();
        match &self.bar {
            Some(bar) => bar.set_message(message),
            None => eprintln!("{}: {message}", self.what),
        }
    }

    /// `n` more steps done.
    pub fn inc(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    /// Prints a line of results on stdout without tearing the bar.
    pub fn println(&self, line: impl AsRef<str>) {
        match &self.bar {
            Some(bar) => bar.suspend(|| println!("{}", line.as_ref())),
            None => println!("{}", line.as_ref()),
        }
    }

    /// The work is done: the bar goes away.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl crate::sample::Progress for Progress {
    fn stage(&self, message: String) {
        Progress::stage(self, message);
    }
    fn inc(&self, units: u64) {
        Progress::inc(self, units);
    }
}

/// The original's single-dash long options (`-epochs`) become `--epochs`; negative numbers and
/// single-letter options (`-L 16`, `-T -1`) stay as they are.
pub fn normalize_args(args: impl Iterator<Item = String>) -> Vec<String> {
    args.enumerate()
        .map(|(i, a)| {
            let single_dash_word = a.len() > 2
                && a.starts_with('-')
                && !a.starts_with("--")
                && a[1..]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic());
            if i > 0 && single_dash_word {
                format!("-{a}")
            } else {
                a
            }
        })
        .collect()
}

/// The options given on the command line (clap's ids, the field names), as opposed to those
/// that took their defaults.
#[derive(Debug, Clone, Default)]
pub struct Given(Vec<String>);

impl Given {
    pub fn contains(&self, id: &str) -> bool {
        self.0.iter().any(|g| g == id)
    }
}

/// Parses the command line; `--help` and `--version` print and exit 0, bad arguments print one
/// line (clap's first, which names the bad value or option) and give `Err(exit code 2)`.
pub fn parse<T: clap::Parser>() -> Result<(T, Given), ExitCode> {
    let parsed = T::command()
        .try_get_matches_from(normalize_args(std::env::args()))
        .and_then(|m| {
            let command = T::command();
            let given = m
                .ids()
                // Options only (not the group clap names after the struct).
                .filter(|id| command.get_arguments().any(|a| a.get_id() == *id))
                .filter(|id| {
                    m.value_source(id.as_str()) == Some(clap::parser::ValueSource::CommandLine)
                })
                .map(|id| id.to_string())
                .collect();
            T::from_arg_matches(&m).map(|t| (t, Given(given)))
        });
    match parsed {
        Ok(cli) => Ok(cli),
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            // The message up to clap's usage block: one line, or a list of missing options
            // joined onto it.
            let text = e.to_string();
            let message: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let message = if message.is_empty() {
                "error: bad arguments".to_string()
            } else {
                message.join(" ")
            };
            eprintln!("{message} (see --help)");
            Err(ExitCode::from(2))
        }
    }
}

/// A binary's `main`: parse the command line (see [`parse`]), run, report (see [`report`]).
pub fn main<T: clap::Parser>(run: impl FnOnce(T) -> Result<(), RunError>) -> ExitCode {
    main_given(|args, _| run(args))
}

/// [`main`] for a command that needs to know which options were given explicitly.
pub fn main_given<T: clap::Parser>(run: impl FnOnce(T, Given) -> Result<(), RunError>) -> ExitCode {
    match parse::<T>() {
        Ok((args, given)) => report(run(args, given)),
        Err(code) => code,
    }
}

/// Prints a run error as one line; exit code 2 for bad input, 130 after a signal, 1 otherwise.
pub fn report(result: Result<(), RunError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(RunError::Interrupted(msg)) => {
            eprintln!("{msg}");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(match e {
                RunError::Input(_) => 2,
                _ => 1,
            })
        }
    }
}
