from evflex.cli import main

main()
