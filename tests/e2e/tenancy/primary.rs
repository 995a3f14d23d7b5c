//! Attacks on a primary user adopted at registration or after a move: a pre-created role with
//! planted members, ADMIN holders or memberships.
