module gotar

go 1.22
