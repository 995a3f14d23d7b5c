//! Attacks on the limits that must hold across replicas (registration probes, failed
//! authentications), on the scopes a hand-over needs, and on the completeness of the audit
//! record.
