//! The measured scenarios: users, databases, reads (with memory under load), scale (the
//! periodic drift pass over many clusters), floods (valid requests during floods of wrong
//! secrets).

pub mod databases;
pub mod floods;
pub mod reads;
pub mod scale;
pub mod users;
