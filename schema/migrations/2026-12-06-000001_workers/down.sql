DROP TABLE bus_spill;
DROP TABLE room_workers;
DROP TABLE workers;
