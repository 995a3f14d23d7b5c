//! Attacks on the per-server session budget and on the limits that must hold across replicas.
