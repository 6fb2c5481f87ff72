//! `echopost salvage`: keep every readable record of a damaged log (issue 13).
//!
//! The daemon refuses a damaged directory (exit 4) and never guesses past damage; this is
//! the operator's explicit step. It takes the directory's lock (a daemon owning it is
//! exit 3), moves each damaged segment byte for byte into `DIR/quarantine/`, rewrites it
//! with every frame still valid before and after the damage (the lost sequences become
//! a gap the log records), and prints the exact lost ranges. The same report is appended
//! to `DIR/quarantine/salvage.log`. Afterwards `echopost run` delivers the rest.
//! The work is the engine's `echopost_log::salvage`; see its documentation for what it
//! can and cannot fix.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{
    CommandError, CommandResult, Target, locked_error, nothing_there, print_stdout, resolve,
};
use crate::cli::SalvageArgs;
use crate::daemon::exit::ExitCode;

/// Name of the folder damaged files are moved into, inside the state directory.
pub const QUARANTINE_DIR: &str = "quarantine";

/// `--json` output.
#[derive(Debug, Serialize)]
struct SalvageJson {
    dir: String,
    /// Damaged files moved aside: `[from, to]`.
    quarantined: Vec<[String; 2]>,
    /// Undelivered sequences lost, `[first, last]` each.
    lost: Vec<[u64; 2]>,
    lost_records: u64,
    kept_records: u64,
}

/// The quarantine folder of `dir`.
pub fn quarantine_dir(dir: &Path) -> PathBuf {
    dir.join(QUARANTINE_DIR)
}

/// Runs `echopost salvage`.
pub fn run(args: &SalvageArgs) -> CommandResult {
    let target = resolve(&args.dirs)?;
    let dir = &target.dir;
    if !super::has_log(dir).unwrap_or(false) {
        return Err(nothing_there(&target, "holds no log: nothing to salvage"));
    }
    let quarantine = quarantine_dir(dir);
    let report = match echopost_log::salvage(dir, &quarantine) {
        Ok(r) => r,
        Err(echopost_log::Error::Locked { .. }) => return Err(owned(&target)),
        Err(echopost_log::Error::Corruption(c)) => {
            return Err(CommandError::new(
                ExitCode::Corruption,
                format!(
                    "salvage cannot fix this damage: {c}. Nothing more was changed; move the directory aside and keep it (`echopost inspect` still reads what comes before the damage)"
                ),
            ));
        }
        Err(e) => return Err(CommandError::fatal(format!("salvage failed: {e}"))),
    };
    let text = text(dir, &report);
    if !report.quarantined.is_empty() || report.cursor_moved.is_some() {
        log_report(&quarantine, &text)?;
    }
    let out = if args.json {
        let doc = SalvageJson {
            dir: dir.display().to_string(),
            quarantined: report
                .quarantined
                .iter()
                .map(|(a, b)| [a.display().to_string(), b.display().to_string()])
                .collect(),
            lost: report.lost.iter().map(|&(a, b)| [a, b]).collect(),
            lost_records: report.lost_records(),
            kept_records: report.kept_records,
        };
        let mut s = crate::escape::json_pretty(&doc)
            .map_err(|e| CommandError::fatal(format!("cannot encode the report: {e}")))?;
        s.push('\n');
        s
    } else {
        text
    };
    print_stdout(&out)?;
    Ok(ExitCode::Clean)
}

fn owned(target: &Target) -> CommandError {
    let e = locked_error(target);
    CommandError::new(
        ExitCode::Locked,
        format!(
            "salvage needs the directory to itself: {}. Stop the daemon first",
            e.message
        ),
    )
}

fn text(dir: &Path, r: &echopost_log::SalvageReport) -> String {
    if r.quarantined.is_empty() && r.cursor_moved.is_none() {
        return format!(
            "nothing to salvage: the log in {} is intact\n",
            dir.display()
        );
    }
    let mut s = format!("salvaged the log in {}\n", dir.display());
    for (from, to) in &r.quarantined {
        s.push_str(&format!(
            "  quarantined  {} -> {} (every byte kept)\n",
            from.display(),
            to.display()
        ));
    }
    if let Some((from, to)) = r.cursor_moved {
        s.push_str(&format!(
            "  cursor       moved from {from} to {to}: the oldest segment is missing\n"
        ));
    }
    if r.lost.is_empty() {
        s.push_str("  lost         nothing undelivered\n");
    }
    for &(a, b) in &r.lost {
        s.push_str(&format!(
            "  lost         sequences {a}..={b} ({} records)\n",
            b - a + 1
        ));
    }
    s.push_str(&format!(
        "  kept         {} records in the rewritten segments; every other record is untouched\n",
        r.kept_records
    ));
    s.push_str(&format!(
        "\n`echopost run --dir {}` now delivers the rest.\n",
        dir.display()
    ));
    s
}

/// Appends the report to `QUARANTINE/salvage.log`, private like the rest.
fn log_report(quarantine: &Path, text: &str) -> Result<(), CommandError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = quarantine.join("salvage.log");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| CommandError::fatal(format!("cannot write {}: {e}", path.display())))?;
    let stamp = super::utc_rfc3339(super::now_unix_nanos());
    writeln!(f, "{stamp} {text}")
        .map_err(|e| CommandError::fatal(format!("cannot write {}: {e}", path.display())))
}
