from kvstore.node.main import main

main()
