-- Riverside Clinic sample data (fictional people).
CREATE TABLE patients (
    patient_id TEXT PRIMARY KEY,
    first_name TEXT NOT NULL,
    last_name TEXT NOT NULL,
    date_of_birth TEXT NOT NULL  -- YYYY-MM-DD
);
CREATE TABLE slots (
    slot_id TEXT PRIMARY KEY,
    doctor TEXT NOT NULL,
    specialty TEXT NOT NULL,  -- general | dermatology | physiotherapy
    starts_at TEXT NOT NULL   -- YYYY-MM-DD HH:MM, clinic local time
);
CREATE TABLE appointments (
    appointment_id INTEGER PRIMARY KEY AUTOINCREMENT,
    patient_id TEXT NOT NULL REFERENCES patients,
    slot_id TEXT NOT NULL UNIQUE REFERENCES slots
);

INSERT INTO patients VALUES
    ('P-1001', 'Maria', 'Garcia', '1979-04-02'),
    ('P-1002', 'John', 'Smith', '1962-11-30'),
    ('P-1003', 'Mei', 'Chen', '1994-08-15');
INSERT INTO slots VALUES
    ('S101', 'Dr. Patel', 'general', '2027-01-11 09:00'),
    ('S102', 'Dr. Patel', 'general', '2027-01-11 10:30'),
    ('S103', 'Dr. Okafor', 'general', '2027-01-11 14:00'),
    ('S104', 'Dr. Patel', 'general', '2027-01-12 09:30'),
    ('S105', 'Dr. Okafor', 'general', '2027-01-13 11:00'),
    ('S201', 'Dr. Novak', 'dermatology', '2027-01-11 13:00'),
    ('S202', 'Dr. Novak', 'dermatology', '2027-01-14 08:30'),
    ('S301', 'Ms. Brown', 'physiotherapy', '2027-01-12 16:00'),
    ('S302', 'Ms. Brown', 'physiotherapy', '2027-01-13 16:00');
-- S103 is taken already.
INSERT INTO appointments (patient_id, slot_id) VALUES ('P-1002', 'S103');
