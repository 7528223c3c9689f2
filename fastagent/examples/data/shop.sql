-- Northwind Outfitters sample data (fictional people).
CREATE TABLE orders (
    order_number TEXT PRIMARY KEY,
    postal_code TEXT NOT NULL,
    customer_name TEXT NOT NULL,
    status TEXT NOT NULL,  -- processing | shipped | delivered
    carrier TEXT,
    tracking TEXT,
    placed_on TEXT NOT NULL,
    delivered_on TEXT
);
CREATE TABLE order_items (
    order_number TEXT NOT NULL REFERENCES orders,
    sku TEXT NOT NULL,
    name TEXT NOT NULL,
    qty INTEGER NOT NULL,
    price_cents INTEGER NOT NULL,
    returnable INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (order_number, sku)
);
CREATE TABLE returns (
    return_id INTEGER PRIMARY KEY AUTOINCREMENT,
    order_number TEXT NOT NULL,
    sku TEXT NOT NULL,
    reason TEXT NOT NULL,
    UNIQUE (order_number, sku)
);

INSERT INTO orders VALUES
    ('A1001', '94107', 'Sam Rivera', 'delivered', 'UPS', '1Z999AA10123456784', '2026-10-02', '2026-10-06'),
    ('A1002', '10001', 'Priya Shah', 'shipped', 'FedEx', '612999AA10', '2026-11-20', NULL),
    ('A1003', '60601', 'Tom Becker', 'processing', NULL, NULL, '2026-11-24', NULL);
INSERT INTO order_items VALUES
    ('A1001', 'BT-200', 'Trail boots, size 42', 1, 12900, 1),
    ('A1001', 'SK-010', 'Wool socks, 3 pairs', 1, 1800, 0),
    ('A1002', 'JK-550', 'Rain jacket, M', 1, 15900, 1),
    ('A1003', 'TN-100', 'Two-person tent', 1, 24900, 1);
