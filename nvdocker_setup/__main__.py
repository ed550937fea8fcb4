from nvdocker_setup.cli.main import main

main()
