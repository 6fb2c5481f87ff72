//! `echopost`: parse the command line, run the chosen subcommand, exit with its code.
//!
//! Deliberately thin: the daemon lives in the library (`echopost::daemon::lifecycle`) and the
//! operator subcommands in `echopost::commands`, so tests reuse them. Bad flags exit with
//! code 2 (clap's usage-error code, which is also ours).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use echopost::cli::{Cli, Command, RunArgs};
use echopost::commands::{self, finish};
use echopost::config::Config;
use echopost::daemon::lifecycle;

/// How long blocking work (an fsync on a device that stopped answering) may delay the
/// process exit once the daemon has finished.
const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Status(args) => Ok(finish("status", commands::status::run(&args))),
        Command::Inspect(args) => Ok(finish("inspect", commands::inspect::run(&args))),
        Command::Streams(args) => Ok(finish("streams", commands::streams::run(&args))),
        Command::Verify(args) => Ok(finish("verify", commands::verify::run(&args))),
        Command::Salvage(args) => Ok(finish("salvage", commands::salvage::run(&args))),
        Command::Send(args) => Ok(finish("send", commands::send::run(&args))),
        Command::Bench(args) => Ok(finish("bench", commands::bench::run(&args))),
        Command::DeadLetters(cmd) => Ok(finish("dead-letters", commands::dead_letters::run(&cmd))),
    };
    match result {
        Ok(code) => code.into(),
        Err(e) => {
            eprintln!("echopost: {e:#}");
            echopost::daemon::exit::ExitCode::Fatal.into()
        }
    }
}

fn run(args: RunArgs) -> anyhow::Result<echopost::daemon::exit::ExitCode> {
    let config = match Config::from_run_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("echopost: {e}");
            return Ok(e.exit_code());
        }
    };
    echopost::daemon::platform::limit_allocator_arenas();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("echopost")
        .build()
        .context("cannot start the async runtime")?;
    let code = lifecycle::run(config, &runtime);
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    Ok(code)
}
