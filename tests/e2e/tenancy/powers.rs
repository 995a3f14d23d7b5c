//! Attacks that reach for server-wide powers: REPLICATION (a base backup), other teams'
//! databases through PUBLIC's CONNECT, and a session held on `template1`.
