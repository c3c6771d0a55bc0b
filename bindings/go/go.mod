module github.com/wings-backup/wings-backup/bindings/go

go 1.24
