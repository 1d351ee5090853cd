//! The one integration-test binary (one link step for every test).

mod active_directory;
mod ad_source;
mod auth_refresh;
mod cascade;
mod cli;
mod confirmation;
mod contract;
mod daemon;
mod emulator_cli;
mod history;
mod http_source;
mod incremental;
mod ldap;
mod lying_sources;
mod network_errors;
mod packaging;
mod planner;
mod platform_client;
mod rate;
mod samba;
mod saved_plans;
mod slapd;
mod spreadsheets;
mod stopping;
mod support;
mod sync;
