//! Helpers shared by the suites.

pub mod common;
#[macro_use]
pub mod sim_model;
