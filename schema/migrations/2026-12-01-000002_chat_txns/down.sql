DROP TABLE chat_txns;
