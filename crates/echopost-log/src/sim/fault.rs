//! Injected errors: which operation fails ([`Fault`]), with what ([`FaultError`]), and
//! the operation counter that decides it. Every call on the file system and its handles
//! counts, so a test can fail each operation of a workload in turn.

use std::io;

#[cfg(doc)]
use super::SimFs;
use super::SimState;

/// Which error an injected fault produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultError {
    /// `EIO`: the device failed.
    Eio,
    /// `ENOSPC`: no space left on the device.
    Enospc,
}

impl FaultError {
    fn to_io(self) -> io::Error {
        match self {
            FaultError::Eio => io::Error::from_raw_os_error(5),
            FaultError::Enospc => io::Error::from_raw_os_error(28),
        }
    }
}

/// Fail the operation with index `at_op` (0-based, see [`SimFs::op_count`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// Index of the first failing operation.
    pub at_op: u64,
    /// The error returned.
    pub error: FaultError,
    /// If true, every *mutating* operation from `at_op` on fails too (a dead or full
    /// device); reads keep working. If false only operation `at_op` fails.
    pub persistent: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum OpKind {
    Read,
    Mutate,
}

impl SimState {
    /// Counts the operation and decides whether it fails.
    pub(super) fn tick(&mut self, kind: OpKind) -> io::Result<()> {
        let idx = self.op_count;
        self.op_count += 1;
        if let Some(f) = self.fault {
            let hit = if f.persistent {
                idx >= f.at_op && (idx == f.at_op || kind == OpKind::Mutate)
            } else {
                idx == f.at_op
            };
            if hit {
                self.faults_hit += 1;
                return Err(f.error.to_io());
            }
        }
        Ok(())
    }
}
