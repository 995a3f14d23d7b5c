//! The `pgplane` binary's tests, one test binary (one link) with a module per area: the client
//! commands (and those for pools, firewall rules and the CA), deployment (replicas, the container image, Compose, Kubernetes), a reconciler
//! killed mid-batch, `/metrics`, operating secrets and retention, replicas sharing the work,
//! and shutdown. Each runs the real binary against real PostgreSQL servers (end-to-end tier:
//! `make test-e2e`).

mod client;
mod client_connections;
mod deploy;
mod faults;
mod metrics;
mod ops;
mod replicas;
mod shutdown;
mod support;
