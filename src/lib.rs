//! dirsync keeps a SaaS vendor's customers and customer users on the
//! Prismatic integration platform in step with the vendor's own directory.
//!
//! See ARCHITECTURE.md for the bird's-eye view and the code map.

pub mod apply;
pub mod cli;
pub mod config;
pub mod confirm;
pub mod connection_test;
pub mod daemon;
pub mod directory;
pub mod emulator;
pub mod guard;
pub mod model;
pub mod plan;
pub mod platform;
pub mod platform_view;
pub mod report;
pub mod retry;
pub mod run;
pub mod saved_plan;
pub mod source;
pub mod state;
