//! Helpers shared by integration-test binaries. Each binary uses only part of them.
#![allow(dead_code)]

pub mod sandbox;
pub mod tmux;
