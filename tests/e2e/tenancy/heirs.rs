//! Attacks on a deleted user's heirs: planted SECURITY DEFINER code, heirs chosen without the
//! right scope, an heir deleted at the same moment.
