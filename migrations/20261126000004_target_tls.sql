-- TLS to targets: the CA certificate (PEM) that verify-full checks the server against.
alter table clusters add column ca_certificate text;
