"""The local Kafka of development and tests: the Maven-resolved broker launcher and a local CA."""
