from eager.cli import main

main()
