DROP TABLE room_servers;
