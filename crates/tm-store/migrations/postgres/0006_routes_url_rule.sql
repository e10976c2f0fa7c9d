-- The domain's URL rule (UpstreamUrl), as far as a CHECK can state it. The CHECK of
-- 0001 asked only for an http(s) prefix and a length, so a writer other than the
-- registry could store a URL with user-info (`http://user:pw@host`), a fragment,
-- spaces or non-ASCII characters, which the registry then refuses to serve.
--
-- Checked here: 1 to 2048 characters, each one allowed in a URI (RFC 3986: unreserved
-- and reserved characters but `#`, percent-escapes complete), so no whitespace, no
-- control or non-ASCII character and no fragment; the scheme http or https, in any
-- case; an authority that is not empty, has no `@` (user-info) and does not start
-- with `:` (a port without a host). What only a URL parser can tell (a port out of
-- range, a malformed IPv6 address) stays with the domain: such a row is left out of
-- the routing snapshot, logged, and counted in snapshot_rejected_rows_total.
--
-- NOT VALID: every row inserted or updated from now on is checked, rows already stored
-- are not, so that an old bad row cannot fail this migration and with it the start-up
-- (the snapshot load leaves such rows out instead). Once none is left, an operator may
-- run `ALTER TABLE routes VALIDATE CONSTRAINT routes_url_rule`.
--
-- SQLite has no counterpart: it cannot add a constraint to an existing table, only
-- rebuild the table, which an existing bad row would fail. There the registry's own
-- writes are checked by the domain, and the snapshot load leaves out what else is stored.
ALTER TABLE routes ADD CONSTRAINT routes_url_rule CHECK (
    char_length(url) BETWEEN 1 AND 2048
    AND url COLLATE "C" ~ '^([][A-Za-z0-9._~:/?@!$&''()*+,;=-]|%[0-9A-Fa-f]{2})+$'
    AND url COLLATE "C" ~ '^[Hh][Tt][Tt][Pp][Ss]?://[^/?@:][^/?@]*([/?]|$)'
) NOT VALID;
