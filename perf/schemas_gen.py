"""The benchmark corpus' schemas and document builders: four kinds whose schemas `$ref` a
shared common.schema.json (and loot's also cards'), as the example schemas/ do."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

KINDS = ("weights", "cards", "routes", "loot")
DRAFT7 = "http://json-schema.org/draft-07/schema#"
OWNERS = ["core", "live-ops", "economy", "infra", "content"]
REGIONS = ["global", "eu", "us", "apac", "sa"]
RARITIES = ["common", "uncommon", "rare", "epic", "legendary"]
WORDS = ["drop", "rate", "boss", "chest", "tuned", "for", "season", "event", "night", "raid",
         "grind", "player", "bonus"]  # fmt: skip
NON_ASCII = ["Drachenhöhle", "東京", "café", "señal", "Øresund", "naïve", "🐉"]


def ref(name: str, file: str = "common") -> dict[str, str]:
    return {"$ref": f"{file}.schema.json#/definitions/{name}"}


COMMON = {
    "$schema": DRAFT7,
    "$id": "common.schema.json",
    "definitions": {
        "id": {"type": "string", "pattern": "^[a-z][a-z0-9_-]{0,63}$"},
        "version": {"type": "integer", "minimum": 1},
        "owner": {"enum": OWNERS},
        "region": {"enum": REGIONS},
        "tags": {
            "type": "array",
            "maxItems": 16,
            "uniqueItems": True,
            "items": {"type": "string", "pattern": "^[a-z0-9-]{1,24}$"},
        },
        "weight": {"type": "number", "minimum": 0, "maximum": 1_000_000},
        "text": {"type": "string", "maxLength": 400},
    },
}
HEADER = {
    "id": ref("id"),
    "version": ref("version"),
    "owner": ref("owner"),
    "enabled": {"type": "boolean"},
    "tags": ref("tags"),
    "description": ref("text"),
}


def kind_schema(kind: str, body: dict[str, Any], required: str, **extra: Any) -> dict[str, Any]:
    return {
        "$schema": DRAFT7,
        "$id": f"{kind}.schema.json",
        "type": "object",
        "additionalProperties": False,
        "required": ["id", "version", "owner", required],
        "properties": {**HEADER, **body},
        **extra,
    }


def small_int(low: int, high: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": low, "maximum": high}


CARD = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "name", "cost", "rarity"],
    "properties": {
        "id": {"$ref": "#/definitions/card_id"},
        "name": {"type": "string", "minLength": 1, "maxLength": 80},
        "cost": small_int(0, 20),
        "rarity": {"enum": RARITIES},
        "text": ref("text"),
        "stats": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "atk": small_int(0, 99),
                "def": small_int(0, 99),
                "hp": small_int(1, 999),
            },
        },
        "tags": ref("tags"),
    },
}
ROUTE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["path", "upstream", "methods"],
    "properties": {
        "path": {"type": "string", "pattern": "^/[a-z0-9/_-]*$", "maxLength": 200},
        "upstream": {"type": "string", "pattern": "^[a-z0-9.-]+:[0-9]{2,5}$"},
        "methods": {
            "type": "array",
            "minItems": 1,
            "uniqueItems": True,
            "items": {"enum": ["GET", "PUT", "POST", "DELETE", "PATCH"]},
        },
        "timeout_ms": small_int(1, 60_000),
        "retries": small_int(0, 5),
        "region": ref("region"),
    },
}
LOOT_TABLE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "rolls", "entries"],
    "properties": {
        "name": ref("id"),
        "rolls": small_int(1, 10),
        "entries": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["item", "weight"],
                "properties": {
                    "item": ref("card_id", "cards"),
                    "weight": ref("weight"),
                    "min": small_int(0, 100),
                    "max": small_int(1, 100),
                },
            },
        },
    },
}
SCHEMAS = {
    "weights": kind_schema("weights", {
        "unit": {"enum": ["ratio", "score", "ms", "money"]},
        "default": ref("weight"),
        "region": ref("region"),
        "weights": {"type": "object", "minProperties": 1, "propertyNames": ref("id"),
                    "additionalProperties": ref("weight")},
    }, "weights"),
    "cards": kind_schema("cards", {"cards": {"type": "array", "items": CARD}}, "cards",
                         definitions={"card_id": {"type": "string", "pattern": "^c[0-9]{1,7}$"}}),
    "routes": kind_schema("routes", {"routes": {"type": "array", "items": ROUTE}}, "routes"),
    "loot": kind_schema("loot", {"tables": {"type": "array", "items": LOOT_TABLE}}, "tables"),
}  # fmt: skip


def write(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, doc in {"common": COMMON, **SCHEMAS}.items():
        (directory / f"{name}.schema.json").write_text(json.dumps(doc, indent=2) + "\n")


def words(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def description(rng: random.Random) -> str:
    text = words(rng, 2, 14)
    r = rng.random()
    if r < 0.02:
        text += ' (the "hard" mode)'  # an escaped quote: the parser's exact path
    elif r < 0.07:
        text += " " + rng.choice(NON_ASCII)
    return text


def header(rng: random.Random, kind: str, ident: str) -> dict[str, Any]:
    """The fields every kind shares; "version" comes early (the latency edits bump it)."""
    doc: dict[str, Any] = {
        "id": ident,
        "version": rng.randint(1, 50),
        "owner": rng.choice(OWNERS),
        "enabled": rng.random() > 0.1,
        "tags": rng.sample(["beta", "eu", "hot", "pvp", "season-3", "event"], rng.randint(0, 3)),
    }
    if rng.random() < 0.6:
        doc["description"] = description(rng)
    if kind == "weights":
        doc["unit"] = rng.choice(["ratio", "score", "ms", "money"])
        doc["default"] = round(rng.uniform(0, 10), 2)
    return doc


def fill(rng: random.Random, kind: str, doc: dict[str, Any], count: int) -> None:
    """Add `count` entries of the kind's repeated element."""
    if kind == "weights":
        doc["weights"] = {f"k{i}_{rng.randrange(10**6)}": round(rng.uniform(0, 1000), 3)
                          for i in range(count)}  # fmt: skip
    elif kind == "cards":
        doc["cards"] = [card(rng) for _ in range(count)]
    elif kind == "routes":
        doc["routes"] = [route(rng) for _ in range(count)]
    else:
        per_table = 16
        doc["tables"] = [
            {"name": f"t{t}", "rolls": rng.randint(1, 10),
             "entries": [loot_entry(rng) for _ in range(min(per_table, count - t * per_table))]}
            for t in range(-(-count // per_table))
        ]  # fmt: skip


def card(rng: random.Random) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": f"c{rng.randrange(10**7)}",
        "name": words(rng, 1, 3),
        "cost": rng.randint(0, 20),
        "rarity": rng.choice(RARITIES),
        "stats": {"atk": rng.randint(0, 99), "def": rng.randint(0, 99), "hp": rng.randint(1, 999)},
    }
    if rng.random() < 0.5:
        out["text"] = words(rng, 3, 12)
    return out


def route(rng: random.Random) -> dict[str, Any]:
    return {
        "path": "/" + "/".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4))),
        "upstream": f"{rng.choice(WORDS)}.svc:{rng.randint(80, 9999)}",
        "methods": rng.sample(["GET", "PUT", "POST", "DELETE", "PATCH"], rng.randint(1, 3)),
        "timeout_ms": rng.randint(50, 30_000),
        "retries": rng.randint(0, 5),
        "region": rng.choice(REGIONS),
    }


def loot_entry(rng: random.Random) -> dict[str, Any]:
    low = rng.randint(0, 5)
    return {
        "item": f"c{rng.randrange(10**7)}",
        "weight": round(rng.uniform(0, 100), 2),
        "min": low,
        "max": low + rng.randint(1, 20),
    }
