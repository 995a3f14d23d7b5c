// Connection details in the four shapes the cloud shows them: parameters, a connection URI,
// psql flags and a JDBC URL; and a URI the API gave (a pool's) with its password masked. A
// missing password (the token cannot view credentials) is left out of every shape; a hidden one
// is masked in what is shown but not in what is copied.

export const MASK = '••••••••';

function hostPart(host) {
  return host.includes(':') ? `[${host}]` : host;
}

/** A value for a POSIX shell, quoted when it needs it. */
function shell(value) {
  return /^[A-Za-z0-9_.,:/@=+-]+$/.test(value) ? value : `'${value.replaceAll("'", "'\\''")}'`;
}

/** The shapes for `c` = {host, port, user, password (or null), database, sslmode}. */
export function shapes(c, masked) {
  const password = c.password == null ? null : masked ? MASK : c.password;
  const enc = encodeURIComponent;
  const userinfo = password == null ? enc(c.user) : `${enc(c.user)}:${masked ? MASK : enc(c.password)}`;
  const uri = `postgresql://${userinfo}@${hostPart(c.host)}:${c.port}/${enc(c.database)}?sslmode=${enc(c.sslmode)}`;
  const env = [password == null ? null : `PGPASSWORD=${masked ? MASK : shell(password)}`, `PGSSLMODE=${shell(c.sslmode)}`];
  const psql = [...env.filter(Boolean), 'psql', '-h', shell(c.host), '-p', String(c.port), '-U', shell(c.user), '-d', shell(c.database)].join(' ');
  const query = [`user=${enc(c.user)}`, password == null ? null : `password=${masked ? MASK : enc(c.password)}`, `sslmode=${enc(c.sslmode)}`]
    .filter(Boolean).join('&');
  const jdbc = `jdbc:postgresql://${hostPart(c.host)}:${c.port}/${enc(c.database)}?${query}`;
  return { uri, psql, jdbc };
}

/** `uri` (postgresql://user:password@…) with its password, if it has one, masked. */
export function maskedUri(uri) {
  return uri.replace(/^(postgresql:\/\/[^:@/]*:)[^@]*@/, `$1${MASK}@`);
}
