-- Demo Bank sample data (fictional people).
CREATE TABLE customers (
    customer_id TEXT PRIMARY KEY,
    first_name TEXT NOT NULL,
    last_name TEXT NOT NULL,
    date_of_birth TEXT NOT NULL,  -- YYYY-MM-DD
    address TEXT NOT NULL
);
CREATE TABLE cards (
    card_id INTEGER PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers,
    last4 TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'active'  -- active | replaced
);
CREATE TABLE accounts (
    account_id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers,
    kind TEXT NOT NULL,
    balance_cents INTEGER NOT NULL,
    currency TEXT NOT NULL
);
CREATE TABLE card_orders (
    order_id INTEGER PRIMARY KEY AUTOINCREMENT,
    customer_id TEXT NOT NULL,
    card_last4 TEXT NOT NULL,
    reason TEXT NOT NULL,
    address TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'ordered'
);

INSERT INTO customers VALUES
    ('123456', 'Ada', 'Lovelace', '1985-12-10', '12 Analytical Row, London N1 4AB'),
    ('654321', 'Alan', 'Turing', '1990-06-23', '3 Bletchley Lane, Milton Keynes MK3 6EB'),
    ('246810', 'Grace', 'Hopper', '1976-12-09', '9 Compiler Court, Arlington VA 22201');
INSERT INTO cards (customer_id, last4, kind) VALUES
    ('123456', '4242', 'debit'),
    ('123456', '1881', 'credit'),
    ('654321', '1954', 'debit'),
    ('246810', '1906', 'debit');
INSERT INTO accounts VALUES
    ('ACC-1001', '123456', 'checking', 254310, 'GBP'),
    ('ACC-1002', '123456', 'savings', 1200000, 'GBP'),
    ('ACC-2001', '654321', 'checking', 4217, 'GBP'),
    ('ACC-3001', '246810', 'checking', 98765, 'USD');
