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

/// mimalloc instead of the C library's allocator. Replay at `--in-flight` N allocates and
/// frees many small, short-lived buffers per request on one thread and frees them on
/// another (HTTP client futures, headers, tasks); glibc's malloc spent about a fifth of the
/// daemon's CPU on that in issue 16's profile, and the drain ran faster with mimalloc (see
/// the README). Memory stays bounded by the same limits; only the allocator changes.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_arena_eager_commit` (`mimalloc.h`: the fifth option in v2 and
/// v3; `libmimalloc-sys` names only some of them).
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// Makes mimalloc commit arena memory as it is used, not up front. By default it commits
/// its first arena eagerly on Linux, which took the daemon's peak RSS from 35 to 63 MiB
/// replaying at `--in-flight 64` (and from 13 to 35 MiB ingesting), for a speed difference
/// within this machine's run-to-run spread. The arena is reserved by the first allocation, before `main`, so this runs as a
/// constructor; an operator's `MIMALLOC_ARENA_EAGER_COMMIT` still wins. Nothing here may
/// allocate.
extern "C" fn configure_allocator() {
    // SAFETY: `getenv` with a NUL-terminated name, before any thread exists; mimalloc's
    // options are plain statics that `mi_option_set` may write before the first allocation.
    unsafe {
        if libc::getenv(c"MIMALLOC_ARENA_EAGER_COMMIT".as_ptr()).is_null() {
            libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0);
        }
    }
}

#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array")]
static CONFIGURE_ALLOCATOR: extern "C" fn() = configure_allocator;

#[cfg(target_os = "macos")]
#[used]
#[unsafe(link_section = "__DATA,__mod_init_func")]
static CONFIGURE_ALLOCATOR: extern "C" fn() = configure_allocator;

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
