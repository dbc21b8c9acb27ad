-- keygate's MySQL/MariaDB fixture, loaded by docker/compose.yaml (mounted as
-- /docker-entrypoint-initdb.d, run in MYSQL_DATABASE) and by the test suite
-- (crates/keygate-backends/tests/sql_servers.rs, tests/sql_backends.rs),
-- which run it in a fresh database of their own. No CREATE DATABASE / USE.
--
-- Tables:
--   agent      the table from Wazuh's documentation, verbatim: 10,000 good
--              agents and one row per kind of bad record (ids 20001..20008)
--   agent_int  an integer id column (INT): 7 is answered as "007"
--   agent_bin  BIGINT UNSIGNED id, VARBINARY/BLOB text columns
--
-- Good agent n (1..10000): id n zero-padded to 3 digits ("001", "10000"),
-- name agent-NNNNN, ip 10.0.(n div 256).(n mod 256),
-- key = hex SHA-256 of 'key-n' (the PostgreSQL fixture has the same data).

CREATE TABLE agent (
    id VARCHAR(8),
    name VARCHAR(128),
    ip VARCHAR(19),
    agent_key VARCHAR(128)
);

INSERT INTO agent (id, name, ip, agent_key)
SELECT IF(n < 100, LPAD(n, 3, '0'), CAST(n AS CHAR)),
       CONCAT('agent-', LPAD(n, 5, '0')),
       CONCAT('10.0.', n DIV 256, '.', n MOD 256),
       SHA2(CONCAT('key-', n), 256)
FROM (
    SELECT d1.d + 10 * d2.d + 100 * d3.d + 1000 * d4.d + 1 AS n
    FROM (SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4
          UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9) d1
    CROSS JOIN (SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4
          UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9) d2
    CROSS JOIN (SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4
          UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9) d3
    CROSS JOIN (SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4
          UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9) d4
) seq;

-- Bad rows: every one must answer 5 (never forwarded to Wazuh).
INSERT INTO agent (id, name, ip, agent_key) VALUES
    ('20001', 'bad name', '10.9.0.1', SHA2('key-20001', 256)),    -- name with a space
    ('20002', 'bad-key', '10.9.0.2', 'a key with spaces'),        -- key with a space
    ('20003', 'bad-ip', '10.0.0.300', SHA2('key-20003', 256)),    -- invalid ip
    ('20004', 'null-key', '10.9.0.4', NULL),                      -- NULL key
    ('20005', 'dup-ip-a', '10.9.0.5', SHA2('key-20005', 256)),    -- duplicate ip
    ('20006', 'dup-ip-b', '10.9.0.5', SHA2('key-20006', 256)),    -- duplicate ip
    ('20007', 'dup-id-a', '10.9.0.7', SHA2('key-20007', 256)),    -- duplicate id
    ('20007', 'dup-id-b', '10.9.0.8', SHA2('key-20007', 256));    -- duplicate id

CREATE INDEX agent_id ON agent (id);
CREATE INDEX agent_ip ON agent (ip);

CREATE TABLE agent_int (
    id INT,
    name VARCHAR(128),
    ip VARCHAR(19),
    agent_key VARCHAR(128)
);

INSERT INTO agent_int VALUES
    (7, 'int-seven', '10.8.0.7', SHA2('key-int-7', 256)),
    (12345, 'int-big', '10.8.0.45', SHA2('key-int-12345', 256)),
    (-3, 'int-negative', '10.8.0.3', SHA2('key-int-3', 256));     -- bad: negative id

CREATE TABLE agent_bin (
    id BIGINT UNSIGNED,
    name VARBINARY(128),
    ip VARBINARY(19),
    agent_key BLOB
);

INSERT INTO agent_bin VALUES
    (8, 'bin-eight', '10.8.1.8', SHA2('key-bin-8', 256)),
    (9, 'bin-not-utf8', '10.8.1.9', 0x6B6579FF00FE);              -- bad: key is not UTF-8
