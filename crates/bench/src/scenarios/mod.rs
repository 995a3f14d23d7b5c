//! The four measured scenarios: users, databases, reads (with memory under load), scale (the
//! periodic drift pass over many clusters).

pub mod databases;
pub mod reads;
pub mod scale;
pub mod users;
