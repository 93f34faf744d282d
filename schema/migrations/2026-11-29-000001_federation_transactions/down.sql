DROP TABLE federation_received_txns;
DROP TABLE federation_destinations;
DROP TABLE federation_outbound;
