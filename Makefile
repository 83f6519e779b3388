# CohortBridge: the two commands are `make up` and `make test` (see README.md).
SHELL := /bin/bash
.DEFAULT_GOAL := help
CONFIGURATION ?= Release

.PHONY: help up down clean test build bench infra-up infra-down

help:
	@echo "make up      start PostgreSQL, RabbitMQ and the four services in the background"
	@echo "make down    stop everything 'make up' started (data is kept)"
	@echo "make clean   make down, then remove local data and build output"
	@echo "make test    build and run the whole test suite against real PostgreSQL and RabbitMQ"
	@echo "make bench   run the benchmarks against a running platform (make up first)"

up:
	@scripts/up.sh

down:
	@scripts/down.sh

clean: down
	@scripts/infra.sh clean
	@rm -rf artifacts
	@dotnet clean Platform.sln -v q >/dev/null 2>&1 || true

build:
	dotnet build Platform.sln -c $(CONFIGURATION)

test:
	@scripts/test.sh

bench:
	@scripts/bench.sh

infra-up:
	@scripts/infra.sh start

infra-down:
	@scripts/infra.sh stop
