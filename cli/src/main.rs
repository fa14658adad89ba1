//! `durable-status`: the command-line tool.

mod commands;
mod demo;
mod sign_in;

use std::process::ExitCode;

use clap::Parser;
use tracing::{Level, Metadata};
use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::prelude::*;

/// The crates whose events and spans are never shown below INFO: the Azure
/// client crates log whole requests (the URL with a SAS `sig=`, the
/// Authorization header with a SharedKey signature) at DEBUG.
const CAPPED_TARGETS: &[&str] = &["azure_"];

/// Whether `metadata` may be logged at all, whatever RUST_LOG says.
fn allowed(metadata: &Metadata<'_>) -> bool {
    let capped = CAPPED_TARGETS
        .iter()
        .any(|prefix| metadata.target().starts_with(prefix));
    !capped || *metadata.level() <= Level::INFO
}

fn main() -> ExitCode {
    let args = commands::Cli::parse();
    // Logs go to stderr; RUST_LOG sets the level, and the cap above holds
    // under any directive (a layer of its own, not one more directive that
    // a more specific one would override).
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|error| {
        if std::env::var_os(EnvFilter::DEFAULT_ENV).is_some() {
            eprintln!("warning: RUST_LOG is not a valid filter ({error}): logging warnings only");
        }
        EnvFilter::new("warn")
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(filter_fn(allowed))
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .init();

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(args)) {
        Ok(code) => code,
        Err(error) => {
            // One line: the error and its causes.
            let causes: Vec<String> = error.chain().map(|e| e.to_string()).collect();
            eprintln!("error: {}", causes.join(": "));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::callsite::Identifier;
    use tracing::field::FieldSet;
    use tracing::metadata::Kind;

    struct Callsite;
    impl tracing::Callsite for Callsite {
        fn set_interest(&self, _: tracing::subscriber::Interest) {}
        fn metadata(&self) -> &Metadata<'_> {
            unreachable!()
        }
    }
    static CALLSITE: Callsite = Callsite;

    fn metadata(target: &'static str, level: Level) -> Metadata<'static> {
        Metadata::new(
            "event",
            target,
            level,
            None,
            None,
            None,
            FieldSet::new(&[], Identifier(&CALLSITE)),
            Kind::EVENT,
        )
    }

    #[test]
    fn the_azure_crates_are_capped_at_info() {
        for target in [
            "azure_core",
            "azure_core::policies::transport",
            "azure_storage::shared_access_signature",
            "azure_data_tables::operations",
        ] {
            for level in [Level::DEBUG, Level::TRACE] {
                assert!(!allowed(&metadata(target, level)), "{target} {level}");
            }
            for level in [Level::INFO, Level::WARN, Level::ERROR] {
                assert!(allowed(&metadata(target, level)), "{target} {level}");
            }
        }
        for target in ["durable_status", "hyper", "durable_status::azure_like"] {
            assert!(allowed(&metadata(target, Level::TRACE)), "{target}");
        }
    }
}
