DROP TABLE inbound_transactions;
DROP TABLE worker_connections;
DROP TABLE room_devices;
