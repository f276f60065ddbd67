//! deskbot's binary: parse the command line and hand over to the library.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    deskbot::cli::run(deskbot::cli::Cli::parse()).await
}
