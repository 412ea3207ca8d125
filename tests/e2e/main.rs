//! End-to-end tests: each drives the built `cairn` binary against a fresh repository in a
//! temporary directory, as an operator would.

mod backup_restore;
mod concurrency;
mod corruption;
mod delta;
mod failures;
mod hostile;
mod kills;
mod lifecycle;
mod mariadb;
mod parent;
mod repair;
mod rotation;
mod state;
mod support;
