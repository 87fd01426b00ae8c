"""What every HTTP server and client in Conveyor shares: TLS settings, the route table
(from which the OpenAPI document is generated), error translation, logging, the runner."""
