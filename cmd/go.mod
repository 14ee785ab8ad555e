module github.com/parleychat/parley/cmd

go 1.26.0

require (
	github.com/parleychat/parley/pkg v0.0.0
	github.com/parleychat/parley/services v0.0.0
)

replace github.com/parleychat/parley/pkg => ../pkg

replace github.com/parleychat/parley/services => ../services
