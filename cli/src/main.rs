//! `durable-status`: the command-line tool.

mod commands;
mod demo;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let args = commands::Cli::parse();
    // Logs go to stderr; RUST_LOG sets the level. The Azure client crates log
    // whole requests (signatures, SAS tokens) at debug level: never that.
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    for quiet in [
        "azure_core=info",
        "azure_storage=info",
        "azure_data_tables=info",
    ] {
        filter = filter.add_directive(quiet.parse().expect("a valid directive"));
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
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
