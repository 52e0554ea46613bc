"""The OpenAPI 3.1 document of the served model, derived from its prototype.

Every schema here states what the handler does, no more and no less: a body
the schema calls valid is scored (2xx), one it calls invalid is refused with
the error document (4xx). The value rules come from rlambda.prototype (the
same patterns validate requests), so the document cannot drift from the
validator. schemathesis holds the two to each other (tests/test_openapi.py).

The document depends only on the model and the settings: it is built on the
first GET /openapi.json after a model loads, and kept with that model.
"""

from __future__ import annotations

import re
import sys
from typing import Any

from .model import Model
from .prototype import INTEGER_TEXT, LOGICAL_TEXT, NUMBER_TEXT, SPACE, Predictor
from .settings import Settings

_MAX = sys.float_info.max
# R integers are 32-bit; -2**31 is NA.
_INT_MAX = 2**31 - 1
# prototype.SPACE as a class of hex escapes, which both dialects read alike
_SPACE = "[" + "".join(f"\\x{ord(c):02x}" for c in SPACE) + "]"


def _text(pattern: str) -> dict[str, Any]:
    # prototype.SPACE is what the validator strips: ASCII white space, spelled
    # out (\s means more in Python and in ECMA-262, and not the same more)
    return {"type": "string", "pattern": rf"^{_SPACE}*(?:{pattern}){_SPACE}*$"}


# The characters with a meaning in a pattern, for ECMA-262 and Python's re
# alike. re.escape also escapes space, "-", "#", "&" and "~", which
# ECMA-262's unicode mode refuses as escapes ("low-income" made a pattern
# that ajv could not compile); these are literal in both dialects as they are.
_SYNTAX = re.compile(r"[\\^$.*+?()[\]{}|/]")


def _literal(text: str) -> str:
    """``text`` as a pattern that matches it alone, in ECMA-262 (unicode mode) and Python alike."""
    return _SYNTAX.sub(lambda m: "\\" + m.group(0), text)


def _is_integer_text(level: str) -> bool:
    try:
        return str(int(level)) == level
    except ValueError:
        return False


def predictor_schema(p: Predictor, query: bool = False) -> dict[str, Any]:
    """The JSON Schema of one predictor's value (in a body, or as query text)."""
    if p.levels:
        # A level as text (surrounding blanks ignored); a level that is a whole
        # number may also be sent as a JSON number (rank: 2).
        text = _text("|".join(_literal(level) for level in p.levels))
        numbers = [int(level) for level in p.levels if _is_integer_text(level)]
        if query or not numbers:
            return text
        return {"anyOf": [text, {"type": "integer", "enum": numbers}]}
    if p.type == "character":
        return {"type": "string"}
    if p.type == "logical":
        text = _text(LOGICAL_TEXT)
        return text if query else {"anyOf": [{"type": "boolean"}, text]}
    if p.type == "integer":
        text = _text(INTEGER_TEXT)
        number = {"type": "integer", "minimum": -_INT_MAX, "maximum": _INT_MAX}
        return text if query else {"anyOf": [number, text]}
    text = _text(NUMBER_TEXT)
    number = {"type": "number", "minimum": -_MAX, "maximum": _MAX}
    return text if query else {"anyOf": [number, text]}


def _describe(p: Predictor) -> str:
    return f"{p.type}: {p.expected()}"


def _error_responses(*statuses: int) -> dict[str, Any]:
    words = {
        400: "The request cannot be scored as sent; errors[] names each field and what to send.",
        404: "No such route.",
        413: "The body is larger than the function accepts.",
        415: "The body is not JSON (send Content-Type: application/json).",
        500: "A fault on the service's side (logged with request_id).",
        503: "R or the model cannot be loaded right now; retry after Retry-After seconds.",
    }
    return {
        str(s): {"description": words[s], "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        for s in statuses
    }


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def build(model: Model, settings: Settings) -> dict[str, Any]:
    """The OpenAPI 3.1 document for ``model`` as this service serves it."""
    predictors = model.prototype.predictors
    names = [p.name for p in predictors]
    version = str(model.source.provenance()["version"])
    interval = model.has_interval
    example = {k: v for k, v in model.example.items() if v is not None}

    row_properties: dict[str, Any] = {
        p.name: {**predictor_schema(p), "description": _describe(p)} for p in predictors
    }
    row = {
        "type": "object",
        "description": "One row: a field per predictor. Other fields are ignored.",
        "properties": row_properties,
        "required": names,
        "additionalProperties": True,
    }
    level = {
        "type": "number",
        "exclusiveMinimum": 0,
        "exclusiveMaximum": 1,
        "description": "Confidence level of an interval for each prediction (lm and glm models), e.g. 0.95.",
    }
    single = {
        **row,
        "description": "One row. A field named instances would make the body a batch.",
        # "instances" makes the body a batch; "interval" asks for bounds.
        "properties": {**row_properties, "instances": False, "interval": level if interval else False},
    }
    if len(example) == len(names):
        single["example"] = example
    batch = {
        "type": "object",
        "description": f"Up to {settings.max_rows} rows scored in one R call.",
        "properties": {
            "instances": {"type": "array", "items": {"$ref": "#/components/schemas/Row"},
                          "minItems": 1, "maxItems": settings.max_rows},
            "interval": level if interval else False,
        },
        "required": ["instances"],
        "additionalProperties": True,
    }

    answer = _answer_schema(model, interval)
    prediction = {**answer, "properties": {**answer["properties"], "model": {"$ref": "#/components/schemas/ModelVersion"}},
                  "required": [*answer["required"], "model"]}
    batch_answer = {
        "type": "object",
        "properties": {
            "predictions": {"type": "array", "items": {"$ref": "#/components/schemas/Answer"}},
            "model": {"$ref": "#/components/schemas/ModelVersion"},
        },
        "required": ["predictions", "model"],
    }

    query = [
        {"name": p.name, "in": "query", "required": True, "description": _describe(p),
         "schema": predictor_schema(p, query=True)}
        for p in predictors
    ]
    if interval:
        query.append({"name": "interval", "in": "query", "required": False, "schema": level,
                      "description": level["description"]})

    meta = model.describe()
    title = "rlambda: " + (meta.get("formula") or meta.get("class") or "model")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": (
                f"A {meta['kind']} {meta['class']} model served by rlambda, model version {version}. "
                "This document is generated from the model that is loaded: its predictors, types and levels."
            ),
            "x-model": model.source.provenance(),
        },
        "paths": {
            "/predict": {
                "post": {
                    "operationId": "predict",
                    "summary": "Score one row, or a batch of rows",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"oneOf": [
                            {"$ref": "#/components/schemas/SingleRow"},
                            {"$ref": "#/components/schemas/Batch"},
                        ]}}},
                    },
                    "responses": {
                        "200": _json({"oneOf": [{"$ref": "#/components/schemas/Prediction"},
                                                {"$ref": "#/components/schemas/BatchPrediction"}]},
                                     "The prediction (a row), or predictions in row order (a batch)."),
                        **_error_responses(400, 413, 415, 500, 503),
                    },
                },
                "get": {
                    "operationId": "predictQuery",
                    "summary": "Score one row given in the query string",
                    "parameters": query,
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/Prediction"}, "The prediction."),
                        **_error_responses(400, 500, 503),
                    },
                },
            },
            "/ping": {
                "get": {
                    "operationId": "ping",
                    "summary": "200 once R and the model are loaded",
                    "responses": {
                        "200": _json({
                            "type": "object",
                            "properties": {"status": {"const": "ok"},
                                           "model": {"$ref": "#/components/schemas/ModelVersion"}},
                            "required": ["status", "model"],
                        }, "Ready."),
                        **_error_responses(500, 503),
                    },
                },
            },
            "/metadata": {
                "get": {
                    "operationId": "metadata",
                    "summary": "The model's predictors, outputs, example row and versions",
                    "responses": {"200": _json(_metadata_schema(), "The model's description."),
                                  **_error_responses(500, 503)},
                },
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "responses": {"200": _json({"type": "object", "required": ["openapi", "info", "paths"]},
                                               "The OpenAPI document of the served model version."),
                                  **_error_responses(500, 503)},
                },
            },
        },
        "components": {
            "schemas": {
                "Row": row,
                "SingleRow": single,
                "Batch": batch,
                "Answer": answer,
                "Prediction": prediction,
                "BatchPrediction": batch_answer,
                "Interval": {
                    "type": "object",
                    "properties": {"level": {"type": "number"}, "lower": {"type": ["number", "null"]},
                                   "upper": {"type": ["number", "null"]}},
                    "required": ["level", "lower", "upper"],
                },
                "ModelVersion": {
                    "type": "object",
                    "properties": {"uri": {"type": "string"}, "version": {"type": "string"},
                                   "etag": {"type": ["string", "null"]}, "sha256": {"type": "string"}},
                    "required": ["uri", "version", "sha256"],
                },
                "Error": {
                    "type": "object",
                    "properties": {
                        "errorType": {"type": "string"},
                        "httpStatus": {"type": "integer"},
                        "request_id": {"type": "string"},
                        "message": {"type": "string"},
                        "errors": {"type": "array", "items": {
                            "type": "object",
                            "properties": {"field": {"type": "string"}, "problem": {"type": "string"}},
                            "required": ["field", "problem"],
                        }},
                    },
                    "required": ["errorType", "httpStatus", "request_id", "message", "errors"],
                },
            },
        },
    }


def _answer_schema(model: Model, interval: bool) -> dict[str, Any]:
    """One row's answer, by the model's output kind."""
    number = {"type": ["number", "null"], "description": "null when R gives NaN"}
    if model.kind == "binary":
        props: dict[str, Any] = {
            "result": {"type": "boolean", "description": f"probability > threshold ({model.threshold})"},
            "probability": {**number, "description": f"P({model.classes[1] if len(model.classes) == 2 else 'second class'})"},
        }
        required = ["result", "probability"]
    elif model.kind == "multiclass":
        props = {
            "class": {"enum": [*model.classes, None]},
            "probabilities": {"type": "object", "properties": {c: number for c in model.classes},
                              "required": list(model.classes)},
        }
        required = ["class", "probabilities"]
    elif model.kind == "label":
        # R's predict gives the class only, no probabilities
        props = {"class": {"enum": [*model.classes, None]}}
        required = ["class"]
    else:
        props = {"prediction": number}
        required = ["prediction"]
    if interval:
        props["interval"] = {"$ref": "#/components/schemas/Interval"}
    return {"type": "object", "properties": props, "required": required}


def _metadata_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "kind": {"enum": ["binary", "multiclass", "label", "regression"]},
            "class": {"type": "string"},
            "predictors": {"type": "array", "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "type": {"type": "string"},
                               "levels": {"type": "array", "items": {"type": "string"}},
                               "range": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2}},
                "required": ["name", "type"],
            }},
            "example": {"type": "object", "description": "A typical row: the median of each numeric predictor, "
                        "the most frequent level of each factor (null where the model keeps no data)."},
            "interval": {"type": "boolean"},
            "outputs": {"type": "array", "items": {"type": "string"}},
            "model": {"$ref": "#/components/schemas/ModelVersion"},
            "max_rows": {"type": "integer"},
        },
        "required": ["kind", "class", "predictors", "example", "outputs", "model", "max_rows"],
    }
