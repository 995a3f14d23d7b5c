//! Attacks on access groups: squatted names, predicted names, planted members and ADMIN holders.
