"""Northwind Outfitters' backend MCP server: order status and returns.

Run: ``python -m fastagent.examples.backends.shop`` (stdio).
"""

from __future__ import annotations

import sqlite3
from typing import Any, Literal

from mcp.server.mcpserver import Context, MCPServer

from fastagent.examples.backends import connect, db_path, once, request_key

NAME = "shop"
mcp = MCPServer(NAME, instructions="Northwind Outfitters orders.", log_level="WARNING")


def _order(con: sqlite3.Connection, order_number: str, postal_code: str) -> sqlite3.Row | None:
    return con.execute(
        "SELECT * FROM orders WHERE order_number = upper(?) AND postal_code = ?",
        (order_number.strip(), postal_code.strip()),
    ).fetchone()


@mcp.tool()
def get_order_status(order_number: str, postal_code: str) -> dict[str, Any]:
    """Status, shipping and items of an order (the postal code proves it is the caller's)."""
    with connect(NAME) as con:
        row = _order(con, order_number, postal_code)
        if row is None:
            return {"ok": True, "found": False, "error": "no order with that number and postcode"}
        items = con.execute(
            "SELECT i.*, r.return_id FROM order_items i LEFT JOIN returns r"
            " ON r.order_number = i.order_number AND r.sku = i.sku"
            " WHERE i.order_number = ? ORDER BY i.sku",
            (row["order_number"],),
        ).fetchall()
    return {
        "ok": True,
        "found": True,
        "order_number": row["order_number"],
        "status": row["status"],
        "carrier": row["carrier"],
        "tracking": row["tracking"],
        "placed_on": row["placed_on"],
        "delivered_on": row["delivered_on"],
        "items": [
            {
                "sku": i["sku"],
                "name": i["name"],
                "qty": i["qty"],
                "price": f"{i['price_cents'] / 100:.2f}",
                "returnable": bool(i["returnable"]) and row["status"] == "delivered",
                "return_started": i["return_id"] is not None,
            }
            for i in items
        ],
    }


@mcp.tool()
def create_return(
    order_number: str,
    postal_code: str,
    sku: str,
    return_reason: Literal["wrong_size", "damaged", "not_as_described", "changed_mind"],
    ctx: Context,
    idempotency_key: str = "",
) -> dict[str, Any]:
    """Start a return of one delivered item and issue a prepaid label.

    Idempotent per key and per (order, item): a repeat returns the same return.
    """
    key = request_key(ctx, idempotency_key)
    with connect(NAME) as con:

        def write() -> dict[str, Any]:
            order = _order(con, order_number, postal_code)
            if order is None:
                return {"ok": False, "error": "no order with that number and postcode"}
            item = con.execute(
                "SELECT * FROM order_items WHERE order_number = ? AND sku = upper(?)",
                (order["order_number"], sku.strip()),
            ).fetchone()
            if item is None:
                return {"ok": True, "created": False, "error": f"item {sku} is not in the order"}
            if not item["returnable"] or order["status"] != "delivered":
                return {"ok": True, "created": False, "error": f"{item['name']} cannot be returned"}
            existing = con.execute(
                "SELECT return_id FROM returns WHERE order_number = ? AND sku = ?",
                (item["order_number"], item["sku"]),
            ).fetchone()
            if existing is None:
                cur = con.execute(
                    "INSERT INTO returns (order_number, sku, reason) VALUES (?, ?, ?)",
                    (item["order_number"], item["sku"], return_reason),
                )
                return_id = cur.lastrowid
            else:
                return_id = existing["return_id"]
            return {
                "ok": True,
                "created": True,
                "return_id": f"RT-{return_id:05d}",
                "label": f"https://returns.example/label/RT-{return_id:05d}",
                "refund": f"{item['price_cents'] / 100:.2f}",
                "already_started": existing is not None,
            }

        return once(con, "create_return", key, write)


if __name__ == "__main__":
    db_path(NAME)  # create the sample data before the first request
    mcp.run()
