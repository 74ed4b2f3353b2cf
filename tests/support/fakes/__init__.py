"""In-memory repositories: pure logic runs against these in fast unit tests with sockets off."""
