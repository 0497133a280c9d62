from hubquant.cli import main

main()
