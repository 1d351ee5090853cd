//! The one integration-test binary (one link step for every test).

mod auth_refresh;
mod cli;
mod contract;
mod emulator_cli;
mod planner;
mod platform_client;
mod support;
mod sync;
