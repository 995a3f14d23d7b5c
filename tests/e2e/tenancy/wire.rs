//! Attacks from a fake server on the wire: asking for the admin password in cleartext or as
//! MD5, and plaintext connections where they are not allowed.
