module github.com/wings-backup/wings-backup/examples/go-host

go 1.24

require github.com/wings-backup/wings-backup/bindings/go v0.0.0

replace github.com/wings-backup/wings-backup/bindings/go => ../../bindings/go
