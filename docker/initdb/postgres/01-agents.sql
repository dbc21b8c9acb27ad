-- keygate's PostgreSQL fixture, loaded by docker/compose.yaml (mounted as
-- /docker-entrypoint-initdb.d, run in POSTGRES_DB) and by the test suite
-- (crates/keygate-backends/tests/sql_servers.rs, tests/sql_backends.rs),
-- which run it in a fresh database of their own. No CREATE DATABASE.
--
-- Tables:
--   agent       the table from Wazuh's documentation, verbatim: 10,000 good
--               agents and one row per kind of bad record (ids 20001..20008)
--   agent_int   an integer id column: 7 is answered as "007"
--               (query with `WHERE id = $1::int`)
--   agent_inet  an inet column holding hosts (IPv4, IPv6) and a network
--               (query with `WHERE ip >>= $1::inet`)
--   agent_cidr  a cidr column and a bigint id
--
-- Good agent n (1..10000): id n zero-padded to 3 digits ("001", "10000"),
-- name agent-NNNNN, ip 10.0.(n / 256).(n % 256),
-- key = hex SHA-256 of 'key-n' (the MySQL fixture has the same data).

CREATE TABLE agent (
    id VARCHAR(8),
    name VARCHAR(128),
    ip VARCHAR(19),
    agent_key VARCHAR(128)
);

INSERT INTO agent (id, name, ip, agent_key)
SELECT CASE WHEN n < 100 THEN lpad(n::text, 3, '0') ELSE n::text END,
       'agent-' || lpad(n::text, 5, '0'),
       '10.0.' || (n / 256) || '.' || (n % 256),
       encode(sha256(convert_to('key-' || n, 'UTF8')), 'hex')
FROM generate_series(1, 10000) AS n;

-- Bad rows: every one must answer 5 (never forwarded to Wazuh).
INSERT INTO agent (id, name, ip, agent_key) VALUES
    ('20001', 'bad name', '10.9.0.1', encode(sha256('key-20001'), 'hex')),   -- name with a space
    ('20002', 'bad-key', '10.9.0.2', 'a key with spaces'),                   -- key with a space
    ('20003', 'bad-ip', '10.0.0.300', encode(sha256('key-20003'), 'hex')),   -- invalid ip
    ('20004', 'null-key', '10.9.0.4', NULL),                                 -- NULL key
    ('20005', 'dup-ip-a', '10.9.0.5', encode(sha256('key-20005'), 'hex')),   -- duplicate ip
    ('20006', 'dup-ip-b', '10.9.0.5', encode(sha256('key-20006'), 'hex')),   -- duplicate ip
    ('20007', 'dup-id-a', '10.9.0.7', encode(sha256('key-20007'), 'hex')),   -- duplicate id
    ('20007', 'dup-id-b', '10.9.0.8', encode(sha256('key-20007'), 'hex'));   -- duplicate id

CREATE INDEX agent_id ON agent (id);
CREATE INDEX agent_ip ON agent (ip);

CREATE TABLE agent_int (
    id INTEGER,
    name TEXT,
    ip TEXT,
    agent_key TEXT
);

INSERT INTO agent_int VALUES
    (7, 'int-seven', '10.8.0.7', encode(sha256('key-int-7'), 'hex')),
    (12345, 'int-big', '10.8.0.45', encode(sha256('key-int-12345'), 'hex')),
    (-3, 'int-negative', '10.8.0.3', encode(sha256('key-int-3'), 'hex'));    -- bad: negative id

CREATE TABLE agent_inet (
    id CHAR(8),          -- char(n): the padding is not part of the id
    name VARCHAR(128),
    ip INET,
    agent_key TEXT
);

INSERT INTO agent_inet VALUES
    ('501', 'inet-host', '10.50.0.1', encode(sha256('key-inet-501'), 'hex')),
    ('502', 'inet-host6', '2001:db8::50', encode(sha256('key-inet-502'), 'hex')),
    ('503', 'inet-net', '10.60.0.0/24', encode(sha256('key-inet-503'), 'hex'));

CREATE TABLE agent_cidr (
    id BIGINT,
    name TEXT,
    ip CIDR,
    agent_key TEXT
);

INSERT INTO agent_cidr VALUES
    (601, 'cidr-net', '10.70.0.0/16', encode(sha256('key-cidr-601'), 'hex')),
    (602, 'cidr-host', '10.71.0.1/32', encode(sha256('key-cidr-602'), 'hex'));
