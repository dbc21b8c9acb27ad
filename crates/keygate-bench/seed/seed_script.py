#!/usr/bin/env python3
"""The baseline keygate is measured against: a re-creation, for benchmarking
only, of the kind of script Wazuh's documentation gives for agent key polling
with MySQL. It does what those scripts do: start an interpreter, open a fresh
database connection, build the SQL by string splicing, print the first row.

DO NOT USE IT: the spliced SQL is injectable and nothing is validated.

    pip install mysql-connector-python
    python3 seed_script.py id 001      (env SEED_DB_HOST/USER/PASSWORD/NAME)
"""
import json
import os
import sys

import mysql.connector


def main():
    if len(sys.argv) < 3:
        print(json.dumps({"error": 1, "message": "Too few arguments"}))
        return
    kind, value = sys.argv[1], sys.argv[2]
    try:
        db = mysql.connector.connect(
            host=os.environ.get("SEED_DB_HOST", "127.0.0.1"),
            user=os.environ.get("SEED_DB_USER", "root"),
            password=os.environ.get("SEED_DB_PASSWORD", ""),
            database=os.environ.get("SEED_DB_NAME", "keygate_bench"),
        )
    except Exception as e:  # noqa: BLE001 - as the documented scripts do
        print(json.dumps({"error": 2, "message": str(e)}))
        return
    cursor = db.cursor()
    if kind == "id":
        cursor.execute("SELECT id,name,ip,agent_key FROM agent WHERE id = '" + value + "'")
    elif kind == "ip":
        cursor.execute("SELECT id,name,ip,agent_key FROM agent WHERE ip = '" + value + "'")
    else:
        print(json.dumps({"error": 3, "message": "Bad request type"}))
        return
    row = cursor.fetchone()
    if row is None:
        print(json.dumps({"error": 4, "message": "No agent key found"}))
    else:
        print(json.dumps({"error": 0, "data": {"id": row[0], "name": row[1], "ip": row[2], "key": row[3]}}))
    db.close()


if __name__ == "__main__":
    main()
