//! quiver's integration tests, one binary (one link) for all of them. Every test that touches a
//! database runs on SQLite and on the real PostgreSQL server.

mod harness;
mod python;

mod cli;
mod copy;
mod daemon;
mod delta;
mod faults;
mod feed;
mod first_run;
mod import;
mod live;
mod props;
mod pypkg;
mod read;
mod shell;
mod slt;
mod store;
mod sync;
